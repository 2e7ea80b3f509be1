"""Webhook delivery throughput: deliveries per second to a fast loopback receiver.

A receiver (aiohttp, its own process so it does not share our core) answers 200 at once;
``--bots`` bots x ``--events`` state changes go through the real outbox (SQLite file,
``enqueue`` inside the writing transaction) and the real worker (``ThreadDb``, aiohttp
``Sender``, signed bodies, per-bot order). Reported: deliveries per second from the first
poke to the last ``delivered`` row, and the receiver's count as a cross-check.

    python bench/webhooks.py [--bots 500] [--events 4] [--concurrency 16]

The outbox tables come from ``outbox.migrate``; the two bot tables it reads are created
here with just the columns it uses (until the outbox is wired into the store).
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import socket
import sqlite3
import tempfile
import time
from pathlib import Path

from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.sender import Sender
from botsched.daemon.webhooks.worker import DeliveryWorker, ThreadDb

BOT_TABLES = """
CREATE TABLE bots (id TEXT PRIMARY KEY, meeting_url TEXT NOT NULL, bot_name TEXT NOT NULL, state TEXT NOT NULL,
                   join_at TEXT, metadata TEXT NOT NULL DEFAULT '{}', dedup_key TEXT);
CREATE TABLE events (seq INTEGER PRIMARY KEY, bot_id TEXT NOT NULL, state TEXT NOT NULL, at_us INTEGER NOT NULL,
                     detail TEXT)
"""
STATES = [
    "scheduled",
    "staged",
    "joining",
    "joined_recording",
    "leaving",
    "post_processing",
    "ended",
]


class _Event:
    __slots__ = ("at_us", "bot_id", "detail", "seq", "state")

    def __init__(self, seq: int, bot_id: str, state: str, at_us: int) -> None:
        self.seq, self.bot_id, self.state, self.at_us, self.detail = (
            seq,
            bot_id,
            state,
            at_us,
            None,
        )


def _serve(sock: socket.socket, counter: multiprocessing.Value) -> None:  # type: ignore[valid-type]
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        with counter.get_lock():  # type: ignore[attr-defined]
            counter.value += 1  # type: ignore[attr-defined]
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True)


def _prepare(path: Path, bots: int, events: int, url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in BOT_TABLES.split(";"):
        conn.execute(statement)
    outbox.migrate(conn)
    conn.execute("COMMIT")
    outbox.add_endpoint(conn, url, (), int(time.time() * 1e6))
    seq = 0
    for state in STATES[:events]:
        conn.execute("BEGIN IMMEDIATE")
        batch = []
        for i in range(bots):
            bot_id = f"bot_{i:016d}"
            if state == STATES[0]:
                conn.execute(
                    "INSERT INTO bots (id, meeting_url, bot_name, state) VALUES (?, ?, ?, ?)",
                    (bot_id, "https://meet.google.com/abc-defg-hij", "Bench", state),
                )
            seq += 1
            at_us = int(time.time() * 1e6)
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, NULL)",
                (seq, bot_id, state, at_us),
            )
            batch.append(_Event(seq, bot_id, state, at_us))
        outbox.enqueue(conn, batch)
        conn.execute("COMMIT")
    return conn


async def _measure(
    path: Path, conn: sqlite3.Connection, total: int, concurrency: int
) -> float:
    db = ThreadDb(str(path))
    async with Sender() as sender:
        worker = DeliveryWorker(db, sender, concurrency=concurrency)
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while (
            conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
            ).fetchone()[0]
            < total
        ):
            await asyncio.sleep(0.02)
        took = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    db.close()
    return took


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, default=500)
    parser.add_argument(
        "--events", type=int, default=4, choices=range(1, len(STATES) + 1)
    )
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/hook"
    counter = multiprocessing.Value("i", 0)
    server = multiprocessing.Process(target=_serve, args=(sock, counter), daemon=True)
    server.start()
    try:
        with tempfile.TemporaryDirectory(prefix="botsched-bench-webhooks-") as tmp:
            path = Path(tmp) / "botsched.db"
            total = args.bots * args.events
            t0 = time.perf_counter()
            conn = _prepare(path, args.bots, args.events, url)
            enqueue_s = time.perf_counter() - t0
            time.sleep(0.3)  # the receiver is up
            took = asyncio.run(_measure(path, conn, total, args.concurrency))
            conn.close()
        print(
            f"{total} deliveries ({args.bots} bots x {args.events} events, concurrency {args.concurrency}): "
            f"{took:.2f} s = {total / took:,.0f} deliveries/s; receiver counted {counter.value}; "
            f"enqueue + commit of all state changes {enqueue_s * 1000:.0f} ms"
        )
    finally:
        server.terminate()
        server.join(5)


if __name__ == "__main__":
    main()
