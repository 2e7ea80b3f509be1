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

#: The columns of the store's ``bots`` and ``events`` tables that the outbox reads. Once the
#: outbox is wired into the store these tests should open the real store instead.
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


class Bots:
    """A tiny stand-in for the store's writes: bot rows and events, then ``enqueue`` in the
    same transaction (as the store will do)."""

    def __init__(self, conn: sqlite3.Connection) -> None:
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
        self.conn.execute("BEGIN IMMEDIATE")
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
