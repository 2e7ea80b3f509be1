"""Shared test parts: a real aiohttp receiver on loopback and a real SQLite outbox file."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

from aiohttp import web

from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.outbox import Conn
from botsched.daemon.webhooks.worker import StoreDb, ThreadDb

#: The columns of the store's ``bots`` and ``events`` tables that the outbox reads: the
#: worker's unit tests need no whole store (``test_store_outbox.py`` uses the real one).
BOTS_DDL = """
CREATE TABLE bots (id TEXT PRIMARY KEY, meeting_url TEXT NOT NULL, bot_name TEXT NOT NULL, state TEXT NOT NULL,
                   join_at TEXT, metadata TEXT NOT NULL DEFAULT '{}', dedup_key TEXT);
CREATE TABLE events (seq INTEGER PRIMARY KEY, bot_id TEXT NOT NULL, state TEXT NOT NULL, at_us INTEGER NOT NULL,
                     detail TEXT);
"""


@dataclass
class Ev:
    seq: int
    bot_id: str
    state: str
    at_us: int
    detail: str | None = None


def make_db(path: Path) -> Path:
    """A fresh database file with the outbox tables (and the bot tables it reads)."""
    conn = connect(path)
    conn.execute("BEGIN IMMEDIATE")
    for statement in BOTS_DDL.split(";"):
        if statement.strip():
            conn.execute(statement)
    outbox.migrate(conn)
    conn.execute("COMMIT")
    conn.close()
    return path


def connect(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def begin(conn: Conn) -> None:
    """A write transaction in the connection's dialect (SQLite: ``BEGIN IMMEDIATE``)."""
    conn.execute("BEGIN" if getattr(conn, "dialect", outbox.SQLITE) == outbox.POSTGRES else "BEGIN IMMEDIATE")


class Backend:
    """Where a test's outbox lives: a SQLite file, or (cluster mode) a PostgreSQL schema
    reached through the store's ``OutboxConnection``; the same tests run on both."""

    def __init__(self, kind: str, path: Path | None = None, url: str | None = None) -> None:
        self.kind = kind
        self.path = path
        self.url = url
        if kind == "postgres":
            from botsched.daemon.store.postgres import MIGRATIONS

            conn = self.connect()
            try:
                begin(conn)
                for statement in BOTS_DDL.replace(" INTEGER", " BIGINT").split(";"):
                    if statement.strip():
                        conn.execute(statement)
                for statement in MIGRATIONS[4]:  # the store's own outbox tables (and runner_logs)
                    conn.execute(statement)
                conn.execute("COMMIT")
            finally:
                conn.close()
        else:
            assert path is not None
            make_db(path)

    def connect(self, agent: str | None = None) -> Any:
        """A test-side connection (``close()`` when done); on PostgreSQL, claiming for ``agent``."""
        if self.kind == "sqlite":
            assert self.path is not None
            return connect(self.path)
        import psycopg

        from botsched.daemon.store.postgres import OutboxConnection

        class Closing(OutboxConnection):
            def close(self) -> None:
                self.connection.close()

        assert self.url is not None
        return Closing(psycopg.connect(self.url, autocommit=True), agent)

    def db(self) -> ThreadDb | StoreDb:
        """The worker's ``Db``: its own thread and connection, as in the daemon."""
        if self.kind == "sqlite":
            return ThreadDb(str(self.path))
        held: list[Any] = []

        def lend(fn: Callable[[Conn], Any]) -> Any:
            if not held:
                held.append(self.connect())
            return fn(held[0])

        return StoreDb(lend)


class Bots:
    """A tiny stand-in for the store's writes: bot rows and events, then ``enqueue`` in the
    same transaction (as the store will do)."""

    def __init__(self, conn: Conn) -> None:
        self.conn = conn
        self.seq = 0

    def add(
        self, bot_id: str, url: str = "https://meet.google.com/abc-defg-hij"
    ) -> None:
        self.conn.execute(
            "INSERT INTO bots (id, meeting_url, bot_name, state, join_at, metadata) VALUES (?, ?, ?, ?, ?, ?)",
            (
                bot_id,
                url,
                "Bot",
                "scheduled",
                "2026-12-01T15:00:00Z",
                '{"team": "sales"}',
            ),
        )

    def change(
        self, changes: list[tuple[str, str]], detail: str | None = None
    ) -> list[Ev]:
        """Record (bot_id, new_state) events and their deliveries in one transaction."""
        events = []
        begin(self.conn)
        for bot_id, state in changes:
            if (
                self.conn.execute(
                    "SELECT 1 FROM bots WHERE id = ?", (bot_id,)
                ).fetchone()
                is None
            ):
                self.add(bot_id)
            self.seq += 1
            event = Ev(self.seq, bot_id, state, int(time.time() * 1e6), detail)
            self.conn.execute("UPDATE bots SET state = ? WHERE id = ?", (state, bot_id))
            self.conn.execute(
                "INSERT INTO events (seq, bot_id, state, at_us, detail) VALUES (?, ?, ?, ?, ?)",
                (event.seq, bot_id, state, event.at_us, detail),
            )
            events.append(event)
        outbox.enqueue(self.conn, events)
        self.conn.execute("COMMIT")
        return events


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float


Behaviour = Callable[
    [web.Request, int], Any
]  # (request, number of earlier requests) -> response


@dataclass
class Receiver:
    """A real HTTP server on 127.0.0.1; ``behave`` decides each answer (default 200)."""

    behave: Behaviour | None = None
    received: list[Received] = field(default_factory=list)
    port: int = 0
    _runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        count = len(self.received)
        headers = {k.lower(): v for k, v in request.headers.items()}
        self.received.append(Received(request.path, headers, body, time.time()))
        if self.behave is None:
            return web.Response(status=200)
        answer = self.behave(request, count)
        if asyncio.iscoroutine(answer):
            answer = await answer
        assert isinstance(answer, web.StreamResponse)
        return answer

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        await web.SockSite(self._runner, sock).start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


# -- a receiver in a thread, for tests that drive the real daemon (a separate process) ------


@dataclass
class Answer:
    """What the threaded receiver answers one request with."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    sleep: float = 0.0


#: (path, headers, body, number of earlier requests with this webhook-id) -> Answer
Policy = Callable[[str, dict[str, str], bytes, int], Answer]


class ThreadReceiver:
    """A real HTTP/1.1 server (``http.server``) on 127.0.0.1 in a thread of its own.

    ``port`` may be given to start it on a port the daemon already knows (a receiver that
    was down); ``policy`` decides each answer (default: 200 at once)."""

    def __init__(self, policy: Policy | None = None, port: int = 0) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        self.policy = policy
        self.received: list[Received] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", "0")))
                headers = {k.lower(): v for k, v in self.headers.items()}
                with outer.lock:
                    seen = sum(1 for r in outer.received if r.headers.get("webhook-id") == headers.get("webhook-id"))
                    outer.received.append(Received(self.path, headers, body, time.time()))
                answer = outer.policy(self.path, headers, body, seen) if outer.policy else Answer()
                if answer.sleep:
                    time.sleep(answer.sleep)
                try:
                    self.send_response(answer.status)
                    for name, value in answer.headers.items():
                        self.send_header(name, value)
                    self.send_header("content-length", "0")
                    self.end_headers()
                except OSError:  # the client gave up (timeout): nobody to answer
                    pass

            do_GET = do_POST

        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)

    def bodies(self) -> list[dict[str, Any]]:
        import json

        return [json.loads(r.body) for r in self.snapshot()]


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
