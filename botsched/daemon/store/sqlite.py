"""The SQLite store: WAL mode, and the priority queue that *is* the database.

Only the daemon opens it for writing. Every state change is a compare-and-set
(``UPDATE ... WHERE id = ? AND state = ?``) inside ``BEGIN IMMEDIATE``, so two actors
racing for one bot (a cancel and the scheduler's staging) have exactly one winner.
``synchronous=FULL`` makes each acknowledged commit survive power loss, not just a crash.

The scheduler never loads all bots: the next due time is one indexed ``min()``. The WAL
checkpoint policy is the store's too (``checkpoint_due``): the daemon only picks the thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from botsched.core import states
from botsched.core.errors import BotschedError, DaemonUnavailable
from botsched.core.model import Bot, Due, Event, NewBot, make_bot, new_bot_id
from botsched.daemon.store import schema
from botsched.daemon.store.base import (
    Change,
    DatabaseGone,
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

#: The WAL is checkpointed after this many commits, or once it holds this much (a bulk
#: create is one commit of many pages)...
CHECKPOINT_AFTER_COMMITS = 200
CHECKPOINT_WAL_BYTES = 8 << 20
#: ...and at once after an insert this big (the bulk path waited for a quiet window).
CHECKPOINT_AFTER_INSERT = 10_000

#: One encoder, built once (``json.dumps`` with options builds a new one per call).
_BOT_COLUMNS = "id, meeting_url, bot_name, state, join_at, join_at_us, created_us, updated_us, metadata, dedup_key"


def _identity(path: str) -> tuple[int, int] | None:
    """(device, inode) of ``path``; ``None`` if nothing is there any more."""
    try:
        info = os.stat(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    return info.st_dev, info.st_ino


def _log() -> Any:
    import logging

    return logging.getLogger("botsched.daemon.store")


class _DuplicateKey(Exception):
    """A live bot already holds a dedup key (the unique index said so)."""


def _list_filter(state_filter: Iterable[str], dedup_prefix: str | None) -> tuple[list[str], list[Any]]:
    """``list``'s WHERE clauses and their parameters: the states, a dedup-key prefix."""
    wanted = sorted(set(state_filter))
    clauses: list[str] = []
    params: list[Any] = list(wanted)
    if wanted:
        clauses.append(f"state IN ({','.join('?' * len(wanted))})")
    if dedup_prefix is not None:
        clauses.append("substr(dedup_key, 1, ?) = ?")
        params.extend([len(dedup_prefix), dedup_prefix])
    return clauses, params


class SqliteStore:
    """``Store`` on one SQLite file. Only the daemon opens it for writing."""

    def __init__(
        self, path: Path | str, on_events: EventListener | None = None, on_deleted: DeleteListener | None = None
    ) -> None:
        self.path = str(path)
        self._on_events = on_events
        self._on_deleted = on_deleted
        self._held: list[Event] | None = None  # see hold_announcements()
        self._next_seq = 1
        self._durable = True
        self.commits_since_checkpoint = 0
        self._checkpointer: sqlite3.Connection | None = None
        #: (st_dev, st_ino) of the database file and its WAL as this connection opened them
        self._identity: dict[str, tuple[int, int] | None] = {}
        #: why changes are refused (the files are gone), once noticed; it stays until a restart
        self.files_lost: str | None = None
        self._refusals = 0
        self._refusal_logged = 0.0
        #: webhook deliveries written so far (the daemon pokes the delivery worker when it grows)
        self.deliveries_written = 0
        #: The writer thread's own connection and group state (``group()``); every other
        #: thread uses the main connection.
        self._local = threading.local()
        self._writer_db: sqlite3.Connection | None = None
        self._savepoints = 0
        #: Held around every write transaction, the loop's and the writer thread's: SQLite's
        #: own busy handler would make the loop sleep 1-100 ms steps behind a group commit.
        self._write_lock = threading.Lock()
        try:
            self._main_db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA busy_timeout = 5000")
            schema.refuse_newer(self._db, self.path)
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode.lower() != "wal" and self.path != ":memory:":
                raise BotschedError(f"{self.path}: cannot switch the database to WAL mode")
            self._db.execute("PRAGMA synchronous = FULL")
            # Room for the hot index pages of a million bots (bulk creates hit random ids).
            self._db.execute("PRAGMA cache_size = -16384")
            # No checkpoint inside a commit (it copies and fsyncs pages: ~10 ms that could
            # land right before a join); the scheduler runs checkpoint() in a worker thread.
            self._db.execute("PRAGMA wal_autocheckpoint = 0")
            self._db.execute(f"PRAGMA journal_size_limit = {32 << 20}")  # a big bulk's WAL shrinks back
            schema.migrate(self._db)
            self._probe_writable()
            if self.path != ":memory:":  # opened now: by path later, a deleted file would be a new one
                self._writer_db = self._connect_writer()
            self._next_seq = self.last_seq() + 1
            if self.path != ":memory:":
                self._identity = {self.path: _identity(self.path), f"{self.path}-wal": _identity(f"{self.path}-wal")}
        except sqlite3.DatabaseError as exc:  # corrupt, not a database, read-only, I/O error
            raise DaemonUnavailable(f"cannot use the database {self.path}: {exc}") from None

    def _connect_writer(self) -> sqlite3.Connection:
        """The writer thread's connection (``group()``), durable commits only."""
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA busy_timeout = 5000")
        db.execute("PRAGMA synchronous = FULL")
        db.execute("PRAGMA cache_size = -16384")
        db.execute("PRAGMA wal_autocheckpoint = 0")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        """The connection of the calling thread: the writer thread's inside ``group()``."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        return self._main_db if db is None else db

    def close(self) -> None:
        if self._checkpointer is not None:
            self._checkpointer.close()
        if self._writer_db is not None:
            self._writer_db.close()
        self._main_db.close()

    @contextmanager
    def group(self) -> Iterator[list[Event]]:
        """Group commit, for the writer thread (``store/writer.py``): every transaction
        inside becomes a savepoint of one ``BEGIN IMMEDIATE`` ... ``COMMIT`` on the writer's
        own connection (``synchronous=FULL``): one fsync for many requests, each of which
        fails or succeeds alone. Their events are collected in the yielded list, to be
        announced (on the loop) once the commit is done; nothing is acknowledged before."""
        db = self._writer_db if self._writer_db is not None else self._main_db  # (":memory:": one database)
        if db is self._main_db and self._durable is False:
            db.execute("PRAGMA synchronous = FULL")
            self._durable = True
        if self._identity:
            self.check_files()  # noticed (and rescued) outside the transaction; its requests are refused
        events: list[Event] = []
        self._local.db = db
        self._local.events = events
        self._write_lock.acquire()
        try:
            try:
                db.execute("BEGIN IMMEDIATE")
                next_seq = self._next_seq
                try:
                    yield events
                    db.execute("COMMIT")
                    self.commits_since_checkpoint += 1
                except BaseException:
                    self._next_seq = next_seq
                    if db.in_transaction:
                        db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:
                raise StorageError(f"database {self.path}: {exc}; nothing was changed") from None
        finally:
            self._write_lock.release()
            self._local.db = None
            self._local.events = None

    # -- plumbing -----------------------------------------------------------------

    def _probe_writable(self) -> None:
        """Fail now, not at the first due bot, when the database cannot be written."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute(f"PRAGMA user_version = {schema.SCHEMA_VERSION}")
        finally:
            self._db.execute("ROLLBACK")

    def check_files(self) -> str | None:
        """Whether the database file and its WAL are still the ones this connection writes
        (same device and inode). If one was deleted or replaced, every later commit would
        land in a file that is gone once the daemon stops: say so loudly (once), save a copy
        of what the connection still sees, and return the reason (``files_lost``)."""
        if self.files_lost is not None or not self._identity:
            return self.files_lost
        for path, known in self._identity.items():
            try:
                now = _identity(path)
            except OSError:  # cannot tell (e.g. a permission change): not proof of anything
                continue
            if known is None:  # the WAL did not exist yet at open: remember the first one seen
                self._identity[path] = now
                continue
            if now == known:
                continue
            what = "its WAL file " + path if path != self.path else "the database file " + path
            how = "deleted" if now is None else "replaced by another file"
            self.files_lost = f"{what} was {how} while the daemon was running"
            rescue = self._rescue_copy()
            if rescue is not None:
                self.files_lost += f"; a copy of everything it held is in {rescue}"
            _log().critical(
                "%s: changes can no longer be saved and are refused until the daemon restarts. %s",
                self.files_lost,
                f"To keep the data: botsched daemon stop; mv {rescue} {self.path}; botsched daemon start"
                if rescue is not None else "Its data could not be copied elsewhere; it is lost at the restart",
            )
            break
        return self.files_lost

    def _rescue_copy(self) -> str | None:
        """Copy what this connection still sees (the deleted file and WAL are still open) to
        a new file beside the database; ``None`` if that fails (e.g. the directory is gone)."""
        import time

        target = f"{self.path}.rescued-{time.strftime('%Y%m%dT%H%M%S')}"
        try:
            copy = sqlite3.connect(target)
            try:
                self._main_db.backup(copy)  # (the writer's connection may be inside its transaction)
            finally:
                copy.close()
        except (sqlite3.Error, OSError) as exc:
            _log().error("could not save a copy of the database to %s: %s", target, exc)
            with contextlib.suppress(OSError):
                os.unlink(target)
            return None
        return target

    def _refuse_if_lost(self) -> None:
        if self.check_files() is None:
            return
        import time

        self._refusals += 1
        if time.monotonic() - self._refusal_logged > 60:  # loud, but not a line per request
            _log().error("refused %d change(s): %s", self._refusals, self.files_lost)
            self._refusal_logged = time.monotonic()
            self._refusals = 0
        raise DatabaseGone(
            f"cannot save changes: {self.files_lost}; nothing was changed "
            "(restart the daemon: botsched daemon stop, then start)"
        )

    @contextmanager
    def _transaction(self, durable: bool = True) -> Iterator[list[Event]]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; events appended to the yielded list are
        announced to the listener only once the commit is done.

        ``durable`` (user requests: create, reschedule, cancel) commits with
        ``synchronous=FULL``: fsync'd before the client hears "ok". The scheduler's own state
        changes commit with ``NORMAL`` (no fsync on the event loop right before a join): they
        survive a crash of the daemon, and the next durable commit fsyncs them too; only a
        power cut in between can lose them, and recovery then replays them (misfire rules).
        """
        if durable:  # a change someone will be told is saved: only into a file that is still there
            self._refuse_if_lost()
        elif self._identity:
            self.check_files()  # the scheduler's own changes go on (bots keep joining), logged
        pending: list[Event] = []
        grouped: list[Event] | None = getattr(self._local, "events", None)
        if grouped is not None:  # inside group(): a savepoint of the writer's transaction
            with self._savepoint(pending):
                yield pending
            grouped.extend(pending)
            return
        with self._write_lock:  # one writer at a time, handed over at once (SQLite's busy wait sleeps)
            next_seq = self._next_seq
            if durable != self._durable:
                self._db.execute(f"PRAGMA synchronous = {'FULL' if durable else 'NORMAL'}")
                self._durable = durable
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield pending
                    self._db.execute("COMMIT")
                    self.commits_since_checkpoint += 1
                except BaseException:
                    self._next_seq = next_seq
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                    raise
            except sqlite3.DatabaseError as exc:  # disk full, read-only file, corruption, I/O error
                raise StorageError(f"database {self.path}: {exc}; nothing was changed") from None
        if pending and self._on_events is not None:
            if self._held is not None:
                self._held.extend(pending)
            else:
                self._on_events(pending)

    def announce(self, events: list[Event]) -> None:
        """Tell the listener about events a ``group()`` committed (called on the loop)."""
        if events and self._on_events is not None:
            self._on_events(events)

    @contextmanager
    def _savepoint(self, pending: list[Event]) -> Iterator[None]:
        self._savepoints += 1
        name = f"req{self._savepoints}"
        next_seq = self._next_seq
        try:
            self._db.execute(f"SAVEPOINT {name}")
            try:
                yield
                self._db.execute(f"RELEASE {name}")
            except BaseException:
                self._next_seq = next_seq
                pending.clear()
                self._db.execute(f"ROLLBACK TO {name}")
                self._db.execute(f"RELEASE {name}")
                raise
        except sqlite3.DatabaseError as exc:
            raise StorageError(f"database {self.path}: {exc}; nothing was changed") from None

    @contextmanager
    def hold_announcements(self) -> Iterator[None]:
        """Announce the events committed inside only at the end: the scheduler records a
        batch of joins, sends them at once, and only then lets listeners (and the log) see it."""
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held and self._on_events is not None:
                self._on_events(held)

    def _add_events(self, pending: list[Event], rows: Sequence[tuple[str, str, int, str | None]]) -> None:
        """Insert (bot_id, state, at_us, detail) rows and remember them with their seq.

        Sequence numbers come from a counter, not ``max(seq)``, so a cancel that deletes
        the newest events never lets a number be reused under an ``events --follow``."""
        if not rows:
            return
        first = self._next_seq
        self._next_seq += len(rows)
        self._db.executemany(
            "INSERT INTO events (seq, bot_id, state, at_us, detail) VALUES (?, ?, ?, ?, ?)",
            [(first + i, *row) for i, row in enumerate(rows)],
        )
        added = [Event(first + i, *row) for i, row in enumerate(rows)]
        pending.extend(added)
        # the webhook outbox: its deliveries commit (or roll back) with these events
        self.deliveries_written += outbox.enqueue(self._db, added)

    def _state_of(self, bot_id: str) -> str | None:
        row = self._db.execute("SELECT state FROM bots WHERE id = ?", (bot_id,)).fetchone()
        return row[0] if row else None

    # -- creating -----------------------------------------------------------------

    def insert(self, bots: Sequence[NewBot], now_us: int) -> list[str]:
        """Insert all bots in one transaction (all or nothing); returns their ids.

        A live bot with the same dedup key, or two in the batch, is ``DuplicateKeys``.
        """
        ids = [new_bot_id() for _ in bots]
        bot_rows = insert_rows(ids, bots, now_us)
        try:
            with self._transaction() as pending:
                try:
                    self._db.executemany(f"INSERT INTO bots ({_BOT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)", bot_rows)
                except sqlite3.IntegrityError:
                    raise _DuplicateKey() from None
                firsts = [(bot_id, bot.initial_state, now_us, None) for bot_id, bot in zip(ids, bots, strict=True)]
                self._add_events(pending, firsts)
        except _DuplicateKey:
            raise DuplicateKeys(self._key_clashes(bots)) from None  # asked after the rollback
        if len(bots) >= CHECKPOINT_AFTER_INSERT:
            self.checkpoint()  # fold the big WAL back now, while the window is quiet
        return ids

    def _key_clashes(self, bots: Sequence[NewBot]) -> list[KeyClash]:
        """Every batch item whose key a live bot (or an earlier item) already holds."""
        seen: dict[str, int] = {}
        clashes: list[KeyClash] = []
        for index, bot in enumerate(bots):
            if bot.dedup_key is None:
                continue
            row = self._db.execute(
                "SELECT id, state FROM bots WHERE dedup_key = ? AND state NOT IN ('ended', 'fatal_error')",
                (bot.dedup_key,),
            ).fetchone()
            if row:
                clashes.append(KeyClash(index, bot.dedup_key, row[0], row[1], None))
            elif bot.dedup_key in seen:
                clashes.append(KeyClash(index, bot.dedup_key, None, None, seen[bot.dedup_key]))
            else:
                seen[bot.dedup_key] = index
        return clashes

    # -- reading ------------------------------------------------------------------

    @staticmethod
    def _bot(row: Sequence[Any], events: list[Event]) -> Bot:
        bot_id, url, name, state, join_at, _join_us, created_us, updated_us, metadata, dedup = row
        return make_bot(bot_id, url, name, state, join_at, created_us, updated_us, metadata, dedup, events)

    def _events_for(self, bot_ids: Sequence[str]) -> dict[str, list[Event]]:
        found: dict[str, list[Event]] = {bot_id: [] for bot_id in bot_ids}
        for start in range(0, len(bot_ids), 500):
            chunk = bot_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(
                f"SELECT seq, bot_id, state, at_us, detail FROM events WHERE bot_id IN ({marks}) ORDER BY seq",
                chunk,
            ):
                found[row[1]].append(Event(*row))
        return found

    def get(self, bot_id: str) -> Bot | None:
        row = self._db.execute(f"SELECT {_BOT_COLUMNS} FROM bots WHERE id = ?", (bot_id,)).fetchone()
        if row is None:
            return None
        return self._bot(row, self._events_for([bot_id])[bot_id])

    def get_many(self, bot_ids: Sequence[str]) -> list[Bot]:
        rows: dict[str, Sequence[Any]] = {}
        for start in range(0, len(bot_ids), 500):
            chunk = bot_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            for row in self._db.execute(f"SELECT {_BOT_COLUMNS} FROM bots WHERE id IN ({marks})", chunk):
                rows[row[0]] = row
        events = self._events_for(list(rows))
        return [self._bot(rows[bot_id], events[bot_id]) for bot_id in bot_ids if bot_id in rows]

    def list_bots(
        self, state_filter: Iterable[str] = (), limit: int = 100, dedup_prefix: str | None = None
    ) -> tuple[list[Bot], bool]:
        """Bots ordered by join_at (ad-hoc by created_at); ``limit`` 0 = all; optionally
        only those whose dedup key starts with ``dedup_prefix`` (calendar sync's bots).
        Returns the page and whether more bots match."""
        clauses, params = _list_filter(state_filter, dedup_prefix)
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"SELECT {_BOT_COLUMNS} FROM bots {where} ORDER BY sort_us, created_us, id"
        if limit > 0:
            sql += " LIMIT ?"
            params.append(limit + 1)
        rows = self._db.execute(sql, params).fetchall()
        more = limit > 0 and len(rows) > limit
        rows = rows[:limit] if limit > 0 else rows
        events = self._events_for([row[0] for row in rows])
        return [self._bot(row, events[row[0]]) for row in rows], more

    def list_page(
        self, state_filter: Iterable[str], dedup_prefix: str | None, after: tuple[int, int, str] | None, size: int
    ) -> tuple[list[Bot], tuple[int, int, str] | None]:
        """One page of ``list_bots``' order after the key ``after`` (keyset paging: each page
        is one indexed query, memory bounded by ``size``); returns the page and its last key."""
        clauses, params = _list_filter(state_filter, dedup_prefix)
        if after is not None:
            clauses.append("sort_us >= ? AND (sort_us, created_us, id) > (?, ?, ?)")  # the first: the index
            params.extend([after[0], *after])
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._db.execute(
            f"SELECT {_BOT_COLUMNS}, sort_us FROM bots {where} ORDER BY sort_us, created_us, id LIMIT ?",
            [*params, size],
        ).fetchall()
        if not rows:
            return [], None
        events = self._events_for([row[0] for row in rows])
        last = rows[-1]
        return [self._bot(row[:-1], events[row[0]]) for row in rows], (last[-1], last[6], last[0])

    def ids(self, state_filter: Iterable[str] = (), prefix: str = "", limit: int = 1000) -> list[str]:
        wanted = sorted(set(state_filter))
        where = ["id LIKE ? ESCAPE '\\'"]
        params: list[Any] = [prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"]
        if wanted:
            where.append(f"state IN ({','.join('?' * len(wanted))})")
            params.extend(wanted)
        params.append(limit)
        sql = f"SELECT id FROM bots WHERE {' AND '.join(where)} ORDER BY sort_us LIMIT ?"
        return [row[0] for row in self._db.execute(sql, params)]

    def counts(self) -> dict[str, int]:
        result = {state: 0 for state in states.ALL_STATES}
        for state, count in self._db.execute("SELECT state, count(*) FROM bots GROUP BY state"):
            result[state] = count
        return result

    def events(self, bot_id: str | None = None, after_seq: int = 0, limit: int = 0) -> list[Event]:
        sql = "SELECT seq, bot_id, state, at_us, detail FROM events WHERE seq > ?"
        params: list[Any] = [after_seq]
        if bot_id is not None:
            sql += " AND bot_id = ?"
            params.append(bot_id)
        sql += " ORDER BY seq"
        if limit:
            sql += " LIMIT ?"
            params.append(limit)
        return [Event(*row) for row in self._db.execute(sql, params)]

    def last_seq(self) -> int:
        return int(self._db.execute("SELECT coalesce(max(seq), 0) FROM events").fetchone()[0])

    def state_since(self, bot_id: str) -> tuple[str, int] | None:
        """The bot's state and when it entered it (its last event)."""
        row = self._db.execute(
            "SELECT b.state, e.at_us FROM bots b JOIN events e ON e.bot_id = b.id "
            "WHERE b.id = ? ORDER BY e.seq DESC LIMIT 1",
            (bot_id,),
        ).fetchone()
        return (row[0], row[1]) if row else None

    # -- the queue ----------------------------------------------------------------

    def next_time(self, state: str) -> int | None:
        """Earliest join_at (or created_at for ad-hoc) among bots in ``state``: one index probe."""
        earliest: int | None = self._db.execute("SELECT min(sort_us) FROM bots WHERE state = ?", (state,)).fetchone()[0]
        return earliest

    def due(self, state: str, until_us: int, limit: int = 10_000) -> list[Due]:
        """Bots in ``state`` whose join_at (created_at for ad-hoc) is at or before ``until_us``."""
        rows = self._db.execute(
            "SELECT id, state, sort_us FROM bots WHERE state = ? AND sort_us <= ? ORDER BY sort_us LIMIT ?",
            (state, until_us, limit),
        ).fetchall()
        return [Due(*row) for row in rows]

    def in_states(self, wanted: Iterable[str]) -> list[Due]:
        marks = list(wanted)
        rows = self._db.execute(
            f"SELECT id, state, sort_us FROM bots WHERE state IN ({','.join('?' * len(marks))}) ORDER BY sort_us",
            marks,
        ).fetchall()
        return [Due(*row) for row in rows]

    # -- changing -----------------------------------------------------------------

    def transition_many(self, changes: Sequence[Change], now_us: int) -> list[str]:
        """Apply (bot_id, from_state, to_state, detail) changes as compare-and-sets in one
        transaction; returns the ids that really moved (the others lost a race)."""
        # consecutive changes of one kind form one UPDATE (a burst of joins is one group);
        # the order of the changes is kept, as if applied one by one
        groups: list[tuple[tuple[str, str, str | None], dict[str, None]]] = []
        for bot_id, old, new, detail in changes:
            if not states.is_legal(old, new):
                raise IllegalTransition(f"illegal transition {old} -> {new} for {bot_id}")
            if groups and groups[-1][0] == (old, new, detail) and bot_id not in groups[-1][1]:
                groups[-1][1][bot_id] = None  # an ordered set
            else:
                groups.append(((old, new, detail), {bot_id: None}))
        moved: list[str] = []
        with self._transaction(durable=False) as pending:
            rows: list[tuple[str, str, int, str | None]] = []
            for (old, new, detail), id_set in groups:
                bot_ids = list(id_set)
                for start in range(0, len(bot_ids), 500):
                    chunk = bot_ids[start : start + 500]
                    cursor = self._db.execute(
                        f"UPDATE bots SET state = ?, updated_us = ? WHERE state = ? "
                        f"AND id IN ({','.join('?' * len(chunk))}) RETURNING id",
                        (new, now_us, old, *chunk),
                    )
                    won = {row[0] for row in cursor.fetchall()}
                    for bot_id in chunk:
                        if bot_id in won:
                            moved.append(bot_id)
                            rows.append((bot_id, new, now_us, detail))
            self._add_events(pending, rows)
        return moved

    def transition(self, bot_id: str, old: str, new: str, now_us: int, detail: str | None = None) -> bool:
        return bool(self.transition_many([(bot_id, old, new, detail)], now_us))

    def note(self, bot_id: str, now_us: int, detail: str) -> None:
        """An event that is not a state change (e.g. "waiting for a runner slot")."""
        with self._transaction(durable=False) as pending:
            state = self._state_of(bot_id)
            if state is not None:
                self._add_events(pending, [(bot_id, state, now_us, detail)])

    def stage_many(self, due: Sequence[Due], now_us: int) -> list[str]:
        """scheduled -> staged in one transaction, each fenced on its join_at: a cancel or
        reschedule that slipped in wins. Returns the ids that were staged."""
        staged: list[str] = []
        with self._transaction(durable=False) as pending:
            for bot in due:
                cursor = self._db.execute(
                    "UPDATE bots SET state = 'staged', updated_us = ? WHERE id = ? AND state = 'scheduled' "
                    "AND join_at_us = ?",
                    (now_us, bot.id, bot.join_at_us),
                )
                if cursor.rowcount == 1:
                    staged.append(bot.id)
            self._add_events(pending, [(bot_id, states.STAGED, now_us, None) for bot_id in staged])
        return staged

    def stage(self, bot_id: str, join_at_us: int, now_us: int) -> bool:
        return bool(self.stage_many([Due(bot_id, states.SCHEDULED, join_at_us)], now_us))

    def reschedule(self, bot_id: str, join_at: str, join_at_us: int, now_us: int) -> None:
        with self._transaction():
            cursor = self._db.execute(
                "UPDATE bots SET join_at = ?, join_at_us = ?, updated_us = ? WHERE id = ? AND state = 'scheduled'",
                (join_at, join_at_us, now_us, bot_id),
            )
            if cursor.rowcount != 1:
                raise NotScheduled(bot_id, self._state_of(bot_id))

    def delete_scheduled(self, bot_id: str) -> None:
        """Cancel: a scheduled bot and its history are deleted for good."""
        with self._transaction():
            cursor = self._db.execute("DELETE FROM bots WHERE id = ? AND state = 'scheduled'", (bot_id,))
            if cursor.rowcount != 1:
                raise NotScheduled(bot_id, self._state_of(bot_id))
            self._db.execute("DELETE FROM events WHERE bot_id = ?", (bot_id,))
        if self._on_deleted is not None:
            self._on_deleted(bot_id)

    # -- followed calendars (issue 16): small JSON records, written by the daemon only ----

    def calendars(self) -> list[dict[str, Any]]:
        """Every followed calendar: ``name``, ``source``, ``options``, ``poll`` (decoded), ``created_us``."""
        rows = self._db.execute("SELECT name, source, options, poll, created_us FROM calendars ORDER BY name")
        return [{"name": name, "source": json.loads(source), "options": json.loads(options), "poll": json.loads(poll),
                 "created_us": created} for name, source, options, poll, created in rows.fetchall()]

    def add_calendar(self, name: str, source: dict[str, Any], options: dict[str, Any], poll: dict[str, Any],
                     now_us: int) -> bool:
        """A new followed calendar; ``False`` (nothing changed) when the name is taken."""
        with self._transaction():
            cursor = self._db.execute(
                "INSERT INTO calendars (name, source, options, poll, created_us) VALUES (?, ?, ?, ?, ?) "
                "ON CONFLICT (name) DO NOTHING",
                (name, json.dumps(source), json.dumps(options), json.dumps(poll), now_us),
            )
            return cursor.rowcount == 1

    def save_calendar_poll(self, name: str, poll: dict[str, Any]) -> bool:
        """A calendar's poll state after a poll; ``False`` when it was removed meanwhile."""
        with self._transaction(durable=False):
            cursor = self._db.execute("UPDATE calendars SET poll = ? WHERE name = ?", (json.dumps(poll), name))
            return cursor.rowcount == 1

    def remove_calendar(self, name: str) -> bool:
        with self._transaction():
            return self._db.execute("DELETE FROM calendars WHERE name = ?", (name,)).rowcount == 1

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def checkpoint_due(self) -> bool:
        """Time to fold the WAL back into the database: it keeps start-up, stop and reads quick."""
        return self.commits_since_checkpoint >= CHECKPOINT_AFTER_COMMITS or (
            self.commits_since_checkpoint > 0 and self.wal_bytes() >= CHECKPOINT_WAL_BYTES
        )

    def checkpoint(self) -> None:
        """Copy the WAL back into the database file. ``PASSIVE`` never blocks the writer,
        and it runs on a connection of its own, so the daemon can run it in a worker
        thread while the event loop (and the next join) goes on."""
        self.commits_since_checkpoint = 0
        if self.files_lost is not None:
            return  # (connecting by path would create a new, empty database file there)
        if self._checkpointer is None:
            if self._identity and _identity(self.path) != self._identity.get(self.path):
                return  # gone or replaced: check_files() will say so
            self._checkpointer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            self._checkpointer.execute("PRAGMA busy_timeout = 5000")
        self._checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()

    def integrity_check(self) -> str:
        return str(self._db.execute("PRAGMA integrity_check").fetchone()[0])
